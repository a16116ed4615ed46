"""RefNet's benchmarks (`make bench`): every figure beside a raw baseline measured in the same run."""
