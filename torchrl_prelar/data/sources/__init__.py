"""Episode sources; each yields :class:`~torchrl_prelar.data.Episode` objects for the writer.

The Meta-world generator (``metaworld_scripted``) needs the ``envs`` extra and is imported
from its module.
"""

from torchrl_prelar.data.sources.rlbench import RLBenchSource
from torchrl_prelar.data.sources.ssv2 import SSv2Source
from torchrl_prelar.data.sources.video_folder import VideoFolderSource

__all__ = ["RLBenchSource", "SSv2Source", "VideoFolderSource"]
