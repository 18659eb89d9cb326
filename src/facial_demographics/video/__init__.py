"""Video files, cameras and streams: faces tracked over time, with one stable answer per person.

Needs PyAV (``av``) and ``trackers`` (OC-SORT): ``pip install 'facial-demographics[video]'``.
"""

from .analyzer import VideoAnalyzer, VideoRun
from .results import FrameResult, TrackedFace, TrackSummary
from .source import SourceLostError, VideoError, VideoInfo, VideoSource

__all__ = ["FrameResult", "SourceLostError", "TrackSummary", "TrackedFace", "VideoAnalyzer", "VideoError",
           "VideoInfo", "VideoRun", "VideoSource"]
