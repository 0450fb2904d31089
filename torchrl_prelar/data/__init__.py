"""Action-free video data: episodes, the writer, the clip transform and the replay buffer."""

from torchrl_prelar.data.clips import VideoClipTransform, transitions_from_frames
from torchrl_prelar.data.episodes import Episode, EpisodeError, EpisodeSource, SkippedEpisode
from torchrl_prelar.data.replay import make_video_replay_buffer
from torchrl_prelar.data.writer import VideoDatasetStats, VideoEpisodeWriter

__all__ = [
    "Episode",
    "EpisodeError",
    "EpisodeSource",
    "SkippedEpisode",
    "VideoClipTransform",
    "VideoDatasetStats",
    "VideoEpisodeWriter",
    "make_video_replay_buffer",
    "transitions_from_frames",
]
