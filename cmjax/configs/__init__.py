"""The shipped configs, one per setting: `cmjax --config NAME[:variant]` (or a path to any config
file). `digits_*` and `toy2d_*` run on a CPU in minutes; `cifar10_*` and `imagenet64_*` are the
papers' settings (each file cites its paper rows and marks what could not be verified)."""
