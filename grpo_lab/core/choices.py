"""The named choices of the core's functions, in one place and free of torch, so that the config can
check a value against the same names the functions take before anything heavy is imported."""

AGGREGATION_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3")
GROUP_SCALES = ("group", "batch", "none")
SURROGATE_LEVELS = ("token", "sequence")

# importance corrections (core.corrections): three axes, and the named presets of them
CLIP_AGAINST = ("behaviour", "proximal")
WEIGHT_LEVELS = ("none", "token", "sequence")
CAP_MODES = ("truncate", "mask", "none")
CORRECTION_PRESETS = {  # name -> (clip_against, weight_level, cap_mode)
    "none": ("behaviour", "none", "truncate"),
    "tis": ("proximal", "token", "truncate"),
    "mask": ("proximal", "token", "mask"),
    "sequence_tis": ("proximal", "sequence", "truncate"),
    "sequence_mask": ("proximal", "sequence", "mask"),
    "decoupled": ("proximal", "token", "none"),
}
