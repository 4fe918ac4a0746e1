"""The DeepSpeed trainer: joins the loader (pipeline/), the model (model/) and DeepSpeed."""
