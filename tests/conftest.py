import pytest
import torch

torch.set_num_threads(2)

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available on this machine")
