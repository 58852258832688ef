"""The provenance stage: every output is marked (visible label, GB 45438 metadata, C2PA manifest,
invisible watermark) and can be checked with `vivify verify`."""
