"""Live mode: a camera (or a file or stream paced like one) drives a portrait in real time."""
