"""Several independent optimisers that share every function evaluation.

A committee's members are independent least-squares problems, but one evaluation of the
training loss for all M members costs far less than M evaluations of one: the descriptors
and their derivatives are read once for all members (the force contraction,
:func:`nnmd_lammps.descriptors.ops.slot_forces`). Each member's L-BFGS still needs its
own line search, i.e. a different number of evaluations per iteration.
:func:`lockstep_steps` runs one ``step`` of every optimiser (``torch.optim.LBFGS``
unchanged), each in its own thread whose closure waits until every optimiser still running
has asked for an evaluation; then one call of ``evaluate`` serves them all. Each member
follows exactly the path its optimiser would follow alone (its loss and gradient depend
on its own weights only), in about the number of evaluations of the slowest member.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch


def lockstep_steps(
    optimizers: Sequence[torch.optim.Optimizer],
    evaluate: Callable[[], torch.Tensor],
) -> list[torch.Tensor]:
    """One ``step`` of each optimiser; ``evaluate()`` returns the (M,) losses of all
    members at their current parameters and leaves each member's gradients in its
    parameters' ``.grad`` (one backward pass of the sum). Returns what each ``step``
    returned (the loss at its start). Deterministic: evaluations happen only while every
    running optimiser waits, so thread scheduling changes nothing. An exception in an
    optimiser or in ``evaluate`` stops all of them and is raised here."""
    if len(optimizers) == 1:  # nothing to share: no threads

        def closure() -> torch.Tensor:
            return evaluate()[0]

        return [optimizers[0].step(closure)]

    M = len(optimizers)
    cond = threading.Condition()
    waiting: set[int] = set()
    finished: set[int] = set()
    answers: dict[int, torch.Tensor] = {}
    results: list[torch.Tensor | None] = [None] * M
    errors: list[BaseException] = []
    stop = False

    def closure_of(m: int) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            with cond:
                waiting.add(m)
                cond.notify_all()
                cond.wait_for(lambda: m in answers or stop)
                if m not in answers:
                    raise RuntimeError("lockstep evaluation stopped")
                return answers.pop(m)

        return closure

    def run(m: int) -> None:
        try:
            with torch.enable_grad():  # grad mode is per thread
                results[m] = optimizers[m].step(closure_of(m))
        except BaseException as exc:  # handed to the caller
            with cond:
                errors.append(exc)
        finally:
            with cond:
                finished.add(m)
                cond.notify_all()

    threads = [threading.Thread(target=run, args=(m,), daemon=True) for m in range(M)]
    for t in threads:
        t.start()
    try:
        while True:
            with cond:
                cond.wait_for(lambda: len(waiting) + len(finished) == M)
                if errors or not waiting:
                    break
                asking = sorted(waiting)
            losses = evaluate()  # every running optimiser waits in its closure
            with cond:
                for m in asking:
                    answers[m] = losses[m].detach().clone()
                waiting.clear()
                cond.notify_all()
    except BaseException as exc:
        with cond:
            errors.append(exc)
    finally:
        with cond:
            stop = True
            cond.notify_all()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
