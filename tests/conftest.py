import pytest
import torch

# The reader's test of the built book needs the book built and Chromium: a bare `pytest` leaves
# it out; `make browser` runs it with --confcutdir=tests/browser, which does not read this file.
collect_ignore = ["browser"]

torch.set_num_threads(2)

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available on this machine")
