"""Action-free video data: episodes, the writer, the clip transform and the dataset; the
fine-tuning replay's DreamerV2 slice draw (:mod:`torchrl_prelar.data.episode_slices`)."""

from torchrl_prelar.data.clips import VideoClipTransform, transitions_from_frames
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode, EpisodeError, EpisodeSource, SkippedEpisode
from torchrl_prelar.data.writer import VideoDatasetError, VideoDatasetStats, VideoEpisodeWriter

__all__ = [
    "Episode",
    "EpisodeError",
    "EpisodeSource",
    "SkippedEpisode",
    "VideoClipTransform",
    "VideoDatasetError",
    "VideoDatasetStats",
    "VideoEpisodeWriter",
    "VideoExperienceReplay",
    "transitions_from_frames",
]
