"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""


class VivifyError(Exception):
    """A problem with the user's input or options, reported without a traceback."""


class PortraitTooLarge(VivifyError):
    """A portrait with more pixels than allowed (its header says so; it is not decoded)."""


class SpeechTooLong(VivifyError):
    """Speech (an audio file, or a text once spoken) over the length limit that the caller set."""


class VideoCutShort(VivifyError):
    """A video file whose index lists frames its data does not hold (a download stopped part-way), found once
    the frames that are there have been read."""
