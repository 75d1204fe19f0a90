"""An offline miniature of the paper's setting: drawn images, two caption styles, tiny pretrained models."""
