"""What one studio job may ask for (kept apart from the app, so the CLI can show them without loading it)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one job may ask for; each is refused with a message that names it."""

    upload_bytes: int = 200 * 1024 * 1024  # per request
    megapixels: float = 25.0  # per portrait
    video_seconds: float = 120.0
    audio_seconds: float = 120.0
    waiting_jobs: int = 5  # queued or running, per user


DEFAULT_LIMITS = Limits()
