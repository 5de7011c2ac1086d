"""The pynorm.nn trainer's steps per second on P1's configuration, against its torch twin."""

from .common import THREADS, torch_or_skip


class TrainerSpeed:
    params = (["float32", "float64"],)
    param_names = ["dtype"]
    timeout = 300

    def setup(self, dtype):
        torch_or_skip()  # the twin is the comparison

    def track_steps_per_second(self, dtype):
        from pynorm.nn.bench import benchmark

        return benchmark(dtype, threads=THREADS, steps=10, repeats=3)["pynorm"]

    track_steps_per_second.unit = "steps/s"

    def track_speedup_over_torch_twin(self, dtype):
        from pynorm.nn.bench import benchmark

        return benchmark(dtype, threads=THREADS, steps=10, repeats=3)["speedup"]

    track_speedup_over_torch_twin.unit = "x"
