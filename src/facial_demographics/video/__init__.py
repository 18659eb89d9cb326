"""Video files, cameras and streams: faces tracked over time, with one stable answer per person, people
re-identified across tracks by face, and a population summary over the people seen.

Needs PyAV (``av``) and ``trackers`` (OC-SORT): ``pip install 'facial-demographics[video]'``.
"""

from .analyzer import VideoAnalyzer, VideoRun
from .people import PersonSummary
from .results import FrameResult, ReidMatch, TrackedFace, TrackSummary
from .source import SourceLostError, VideoError, VideoInfo, VideoSource

__all__ = ["FrameResult", "PersonSummary", "ReidMatch", "SourceLostError", "TrackSummary", "TrackedFace",
           "VideoAnalyzer", "VideoError", "VideoInfo", "VideoRun", "VideoSource"]
