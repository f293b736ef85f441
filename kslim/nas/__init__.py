"""Architecture search: token search spaces, SA / RL / random controllers under MACs, params
or device-latency budgets; differentiable search (DARTS, PC-DARTS); Once-for-All supernets,
whose subnets the same controllers search with weight-sharing scores (`OFASpace`).

Example:
  >>> from kslim import nas
  >>> space = nas.MobileNetV2Space()
  >>> sa = nas.SANAS(space, constraint=nas.Constraint("macs", 2e6), checkpoint="sa.json")
  >>> best, score = nas.search(sa, evaluate=train_and_score, steps=30, log="trials.jsonl")
  >>> model = space.decode(best)
"""

from kslim.nas.batch_norm import recalibrate_batch_norm
from kslim.nas.constraints import Constraint
from kslim.nas.constraints import TableLatencyEvaluator
from kslim.nas.controller import Controller
from kslim.nas.darts import DARTS
from kslim.nas.darts import Genotype
from kslim.nas.darts import Supernet
from kslim.nas.darts import build_network
from kslim.nas.evaluation import LatencyReward
from kslim.nas.evaluation import TrainEvaluator
from kslim.nas.evaluation import WeightSharingEvaluator
from kslim.nas.executor import Executor
from kslim.nas.executor import LocalExecutor
from kslim.nas.executor import OptunaExecutor
from kslim.nas.executor import OptunaWorker
from kslim.nas.ofa import OFA
from kslim.nas.ofa import OFASupernet
from kslim.nas.ofa_space import OFASpace
from kslim.nas.pc_darts import PCDARTS
from kslim.nas.random_search import RandomSearch
from kslim.nas.rl import RLNAS
from kslim.nas.sa import SANAS
from kslim.nas.search import plot_trials
from kslim.nas.search import search
from kslim.nas.search_space import BlockSpace
from kslim.nas.search_space import MobileNetV1Space
from kslim.nas.search_space import MobileNetV2Space
from kslim.nas.search_space import ResNetSpace
from kslim.nas.search_space import SearchSpace
from kslim.nas.search_space import StagedSpace

__all__ = ["BlockSpace", "Constraint", "Controller", "DARTS", "Executor", "Genotype",
           "LatencyReward", "LocalExecutor", "MobileNetV1Space", "MobileNetV2Space", "OFA",
           "OFASpace", "OFASupernet", "OptunaExecutor", "OptunaWorker", "PCDARTS", "RLNAS",
           "RandomSearch", "ResNetSpace", "SANAS", "SearchSpace", "StagedSpace", "Supernet",
           "TableLatencyEvaluator", "TrainEvaluator", "WeightSharingEvaluator",
           "build_network", "plot_trials", "recalibrate_batch_norm", "search"]
