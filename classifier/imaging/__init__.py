"""Upload bytes to model-sized pixels: header checks before decoding, decoding, framing."""
