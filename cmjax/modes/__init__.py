"""The inference modes of `launch.py` / `cmjax` on a trained workdir, one module each:

  sample        samples with any noise levels, the t_mid search        (`cmjax.modes.sample`)
  edit          zero-shot editing: inpainting, colourisation, ...     (`cmjax.modes.edit`)
  eval          digits-FD / 2-D metrics, precision/recall, FID        (`cmjax.modes.evaluate`)
  trajectories  exact PF-ODE paths of the 8 Gaussians and the model's f (`cmjax.modes.trajectories`)
  encode        images -> the VAE latent data set of a latent run      (`cmjax.modes.encode`)

Each builds the config purely (`cmjax.builders.build`) and restores parameters from the workdir's
checkpoint alone (`cmjax.modes.common.restore_params`): no teacher directory, LPIPS or initial
weights file is read.
"""
