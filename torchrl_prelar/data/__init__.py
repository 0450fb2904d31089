"""Action-free video data: replay buffer, clip transform, episode sources."""

from torchrl_prelar.data.video import (
    Episode,
    EpisodeError,
    EpisodeSource,
    SkippedEpisode,
    VideoClipTransform,
    VideoDatasetStats,
    VideoEpisodeWriter,
    make_video_replay_buffer,
)

__all__ = [
    "Episode",
    "EpisodeError",
    "EpisodeSource",
    "SkippedEpisode",
    "VideoClipTransform",
    "VideoDatasetStats",
    "VideoEpisodeWriter",
    "make_video_replay_buffer",
]
