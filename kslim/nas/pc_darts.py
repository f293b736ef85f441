"""`PCDARTS`: DARTS with partial channel connections and edge normalization.

Only ``1/K`` of each edge's channels go through the mixed op (the rest bypass it and are
shuffled back in), which cuts the supernet's memory and time by about K; per-edge weights
beta, normalized over the edges entering a node, stabilise the edge choice that the channel
sampling makes noisier. Search, genotype decoding and `build_network` are DARTS'.

References:
  Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
  Search", https://arxiv.org/abs/1907.05737
"""

from kslim.nas.darts import DARTS, Supernet

__all__ = ["PCDARTS"]


class PCDARTS(DARTS):
  """PC-DARTS search; see `DARTS` for the arguments.

  Args:
    partial: K, the channel proportion (channels must divide by it).
    **kwargs: `DARTS`' arguments.

  Example:
    >>> genotype = PCDARTS(channels=8, partial=4).search(x_train, y_train, x_val, y_val)
  """

  def __init__(self, partial=4, **kwargs):
    self.partial = partial
    super().__init__(**kwargs)

  def make_supernet(self, num_classes, channels, layers, steps):
    return Supernet(num_classes, channels, layers, steps, partial=self.partial,
                    edge_normalization=True)
