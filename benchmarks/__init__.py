"""raysweep's benchmarks, one module per measurement; run them from the repository root as modules::

    python -m benchmarks.losses --quick        # each loss's forward+backward beside its peers
    python -m benchmarks.maps --quick          # distance maps
    python -m benchmarks.loss_step --quick     # a whole training step per loss, relative to CE
    python -m benchmarks.data --quick          # loader throughput and evaluation cost
    python -m benchmarks.train --quick         # train_trial's loop overhead over a bare loop
    python -m benchmarks.precision             # each loss on the device against the CPU, and under autocast
    python -m benchmarks.gpu_check             # (CUDA) steps/s and GPU utilisation of the default models
    python -m benchmarks.fractional            # several trials sharing one device
    python -m benchmarks.gpu_session --smoke   # all of the above that a GPU session needs, in one go

Each module exposes the function that measures (parameters in, rows or dicts out), which its own ``main`` prints and
:mod:`benchmarks.gpu_session` records. Not part of the installed package; not run by the tests beyond a smoke check.
"""
