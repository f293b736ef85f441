"""Executors: where a search's candidates are trained — in this process, or by workers on any
number of machines that share an Optuna storage.

`search` asks its executor to score a batch of candidates (token lists) and waits for the
scores; the controller never knows where they ran. `LocalExecutor` trains them one after the
other here. `OptunaExecutor` puts each candidate into an Optuna study as a waiting trial (its
tokens in the trial's user attributes); `OptunaWorker` processes, started wherever the storage
is reachable (a SQL database URL, or a journal file on a shared disk), claim waiting trials
atomically, train them and report the score; the executor collects the scores. Optuna is only
the queue and the record of every trial: the controller (SA, RL, random) still decides what to
try next.

A driver killed mid-batch loses nothing: trials are keyed by the controller's step, so the
resumed search, which proposes the same batch again, reuses the trials already queued or
finished instead of training them twice.
"""

import abc
import datetime
import time
import traceback

from absl import logging

__all__ = ["Executor", "LocalExecutor", "OptunaExecutor", "OptunaWorker", "open_storage"]

_KEY, _TOKENS, _ERROR, _FINISHED = "kslim_key", "tokens", "error", "kslim_finished"


class Executor(abc.ABC):
  """Scores batches of candidates for `search`.

  Attributes:
    parallelism: how many candidates `search` should hand over at once.
  """

  parallelism = 1

  @abc.abstractmethod
  def map(self, space, candidates, first_step):
    """Scores `candidates` (token lists of `space`); returns one float per candidate.

    Args:
      space: the `SearchSpace` that decodes the tokens.
      candidates: the token lists, in order.
      first_step: the controller step of the first candidate (candidate i is step
        ``first_step + i``), which identifies the trial across a resumed search.
    """

  def close(self):
    """Called once when the search is over (tells remote workers to stop)."""


class LocalExecutor(Executor):
  """Trains each candidate in this process, one after the other.

  Args:
    evaluate: ``evaluate(model) -> float``, higher is better.
  """

  def __init__(self, evaluate):
    self.evaluate = evaluate

  def map(self, space, candidates, first_step):
    del first_step
    return [float(self.evaluate(space.decode(tokens))) for tokens in candidates]


def open_storage(storage):
  """An Optuna storage from a URL: ``journal:<path>`` (a journal file, which needs only a shared
  disk), or any SQLAlchemy URL Optuna accepts (``sqlite:///nas.db``,
  ``postgresql://host/db``). A storage object is returned as it is."""
  import optuna  # pylint: disable=g-import-not-at-top  # only searches that distribute need it
  if not isinstance(storage, str):
    return storage
  if storage.startswith("journal:"):
    from optuna.storages import journal  # pylint: disable=g-import-not-at-top
    return optuna.storages.JournalStorage(journal.JournalFileBackend(storage[len("journal:"):]))
  try:
    return optuna.storages.RDBStorage(storage)
  except Exception as error:  # SQLAlchemy raises several types for a bad URL
    raise ValueError(f"Optuna storage {storage!r}: {error}; use journal:<path> or a "
                     "SQLAlchemy URL such as sqlite:///nas.db") from error


def _study(storage, study_name):
  import optuna  # pylint: disable=g-import-not-at-top
  return optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                             load_if_exists=True)


class OptunaExecutor(Executor):
  """Queues candidates as trials of an Optuna study for `OptunaWorker`s and waits for them.

  Args:
    storage: an Optuna storage or URL (see `open_storage`) every worker can reach.
    study_name: the study; one per search (a resumed search uses the same name).
    parallelism: candidates queued at once, usually the number of workers.
    poll_interval: seconds between looks at the storage while waiting.
    timeout: seconds to wait for one batch before giving up (None: forever).
    trial_timeout: seconds after which a trial still running is taken for lost (its worker
      was killed or its machine went away): it is marked failed and queued again for another
      worker. None: wait for it forever. Set it well above one trial's training time.

  Example:
    >>> executor = OptunaExecutor("sqlite:////shared/nas.db", "mnv2-search", parallelism=4)
    >>> best, score = search(SANAS(space, checkpoint="sa.json"), steps=40, executor=executor)
    # elsewhere, on each of 4 machines:
    >>> OptunaWorker("sqlite:////shared/nas.db", "mnv2-search", space, evaluate).run()
  """

  def __init__(self, storage, study_name, parallelism=1, poll_interval=1.0, timeout=None,
               trial_timeout=None):
    if parallelism < 1:
      raise ValueError(f"OptunaExecutor: parallelism must be >= 1, got {parallelism}")
    self.study = _study(open_storage(storage), study_name)
    self.parallelism, self.poll_interval, self.timeout = parallelism, poll_interval, timeout
    self.trial_timeout = trial_timeout
    self.study.set_user_attr(_FINISHED, False)

  def _trials_by_key(self):
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    trials = {}
    for trial in self.study.get_trials(deepcopy=False):
      if _KEY in trial.user_attrs and trial.state != TrialState.FAIL:
        trials[trial.user_attrs[_KEY]] = trial
    return trials

  def map(self, space, candidates, first_step):
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    del space  # the workers decode
    keys = [str(first_step + i) for i in range(len(candidates))]
    known = self._trials_by_key()
    for key, tokens in zip(keys, candidates):
      if key in known and known[key].user_attrs[_TOKENS] == list(tokens):
        logging.info("OptunaExecutor: step %s already queued as trial %d", key,
                     known[key].number)
        continue
      self.study.enqueue_trial({}, user_attrs={_KEY: key, _TOKENS: list(tokens)})
    start = time.monotonic()
    while True:
      trials = {t.user_attrs[_KEY]: t for t in self.study.get_trials(deepcopy=False)
                if t.user_attrs.get(_KEY) in keys}
      self._requeue_lost(trials.values())
      failed = [t for t in trials.values() if t.state == TrialState.FAIL]
      if failed:
        t = failed[0]
        raise RuntimeError(f"OptunaExecutor: trial {t.number} (tokens {t.user_attrs[_TOKENS]}) "
                           f"failed on its worker:\n{t.user_attrs.get(_ERROR, '(no error)')}")
      if all(key in trials and trials[key].state == TrialState.COMPLETE for key in keys):
        return [float(trials[key].value) for key in keys]
      if self.timeout is not None and time.monotonic() - start > self.timeout:
        raise TimeoutError(f"OptunaExecutor: steps {keys[0]}-{keys[-1]} not scored after "
                           f"{self.timeout:g} s; are OptunaWorkers running on study "
                           f"{self.study.study_name!r}?")
      time.sleep(self.poll_interval)

  def _requeue_lost(self, trials):
    """Fails the trials running longer than `trial_timeout` and queues their candidates again;
    the trials passed are updated in place (FAIL -> the new waiting trial's state)."""
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    if self.trial_timeout is None:
      return
    for trial in trials:
      if trial.state != TrialState.RUNNING or trial.datetime_start is None:
        continue
      now = datetime.datetime.now(trial.datetime_start.tzinfo)  # storages differ in time zone
      if (now - trial.datetime_start).total_seconds() > self.trial_timeout:
        logging.warning("OptunaExecutor: trial %d (step %s) running for over %g s; its worker "
                        "is taken for lost and the candidate queued again", trial.number,
                        trial.user_attrs[_KEY], self.trial_timeout)
        self.study.tell(trial.number, state=TrialState.FAIL)
        self.study.enqueue_trial({}, user_attrs={_KEY: trial.user_attrs[_KEY],
                                                 _TOKENS: trial.user_attrs[_TOKENS]})
        trial.state = TrialState.WAITING  # as the queued copy is, until the next look

  def close(self):
    self.study.set_user_attr(_FINISHED, True)


class OptunaWorker:
  """Trains the candidates an `OptunaExecutor` queues, until the search ends.

  Start as many as there are machines (or cores to spare); each claims one waiting trial at a
  time (atomically, through the storage), so no candidate is trained twice.

  Args:
    storage: the executor's storage or URL.
    study_name: the executor's study.
    space: the `SearchSpace` the tokens decode in (the driver's).
    evaluate: ``evaluate(model) -> float``.
  """

  def __init__(self, storage, study_name, space, evaluate):
    self.storage = open_storage(storage)
    _study(self.storage, study_name)  # creates it when the workers start first
    self.study_id = self.storage.get_study_id_from_name(study_name)
    self.space, self.evaluate = space, evaluate

  def _claim(self):
    import optuna  # pylint: disable=g-import-not-at-top
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    for trial in self.storage.get_all_trials(self.study_id, deepcopy=False,
                                             states=(TrialState.WAITING,)):
      if _TOKENS not in trial.user_attrs:
        continue
      trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id,
                                                                       trial.number)
      try:
        if self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):  # False: taken
          return trial_id, trial
      except optuna.exceptions.UpdateFinishedTrialError:  # taken and finished since listed
        continue
    return None

  def run(self, max_trials=None, idle_timeout=None, poll_interval=1.0):
    """Claims and trains trials until the driver closes the search, `max_trials` are done,
    or nothing was queued for `idle_timeout` seconds. Returns the number trained."""
    import optuna  # pylint: disable=g-import-not-at-top
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    done, idle_since = 0, time.monotonic()
    while max_trials is None or done < max_trials:
      claimed = self._claim()
      if claimed is None:
        if self.storage.get_study_user_attrs(self.study_id).get(_FINISHED):
          break
        if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
          logging.info("OptunaWorker: nothing queued for %g s, stopping", idle_timeout)
          break
        time.sleep(poll_interval)
        continue
      trial_id, trial = claimed
      tokens = trial.user_attrs[_TOKENS]
      try:
        score = float(self.evaluate(self.space.decode(tokens)))
      except Exception:  # pylint: disable=broad-except  # reported to the driver, which raises
        error = traceback.format_exc()
        logging.error("OptunaWorker: trial %d (tokens %s) failed:\n%s", trial.number, tokens,
                      error)
        self.storage.set_trial_user_attr(trial_id, _ERROR, error)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
      else:
        try:
          self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [score])
        except optuna.exceptions.UpdateFinishedTrialError:  # the driver took it for lost
          logging.warning("OptunaWorker: trial %d was requeued while training; its score is "
                          "dropped", trial.number)
          continue
        logging.info("OptunaWorker: trial %d (tokens %s) scored %.4f", trial.number, tokens,
                     score)
      done += 1
      idle_since = time.monotonic()
    return done
