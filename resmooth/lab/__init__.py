"""The lab: the trainer, data, models, sweeps, statistics and reports that the book and its studies use.

The loss itself (:mod:`resmooth`) needs torch alone. The lab needs more, which the ``train`` extra
installs: ``pip install 'resmooth[train]'``. Importing any part of the lab without it fails here,
naming the extra, rather than deep inside a module with a bare ``No module named`` error.
"""

from .._extras import require_train_extra

require_train_extra()
