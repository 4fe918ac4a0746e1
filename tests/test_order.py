"""The global order's parts: pieces cut from samples, an epoch's permutation of them, sequences
located in the endless stream, and the mixer's walk over positions."""

import numpy as np

from pipeline.load.order import DatasetOrder, Mixer, SampleTable, cut_pieces


def table(ids: list[int], window: int) -> SampleTable:
    n = len(ids)
    zeros = np.zeros(n, dtype=np.int64)
    return SampleTable(zeros.astype(np.int32), zeros, zeros, np.array(ids) - 1, np.array(ids), window)


def test_long_samples_are_cut_into_pieces_and_short_ones_stay_whole():
    pieces = cut_pieces(table([5, 23, 0, 10], window=4), piece_len=10, concat=True)
    assert list(zip(pieces.sample, pieces.start, pieces.stop)) == [
        (0, 0, 5), (1, 0, 10), (1, 10, 20), (1, 20, 23), (3, 0, 10)]
    assert pieces.units.tolist() == [5, 10, 10, 3, 10] and pieces.epoch_units == 38
    windows = cut_pieces(table([5, 23, 10], window=4), piece_len=10, concat=False)  # 10 → 8: 2 windows
    assert list(zip(windows.sample, windows.start, windows.stop)) == [
        (0, 0, 5), (1, 0, 8), (1, 8, 16), (1, 16, 23), (2, 0, 8), (2, 8, 10)]
    assert windows.units.tolist() == [2, 2, 2, 2, 2, 1]


def concat_stream(order: DatasetOrder, sequences: int) -> list[tuple[int, int]]:
    """(sample, id) of every id of the first `sequences` sequences, in order."""
    return [(s.sample, i) for k in range(sequences) for s in order.sequence(k)[0]
            for i in range(s.start, s.stop)]


def test_concatenated_epochs_hold_every_id_once_and_follow_each_other_without_a_seam():
    samples = table([7, 30, 3, 12, 1, 19], window=8)
    order = DatasetOrder(samples, cut_pieces(samples, 8, concat=True), seq_len=8, concat=True, seed=4,
                         dataset=0)
    units = order.epoch_units  # 72 = 9 sequences of 8
    stream = concat_stream(order, 3 * units // 8)
    every = sorted((s, i) for s, n in enumerate(samples.ids) for i in range(n))
    for epoch in range(3):
        assert sorted(stream[epoch * units:(epoch + 1) * units]) == every
    assert stream[:units] != stream[units:2 * units], "each epoch is a new permutation"
    assert [order.sequence(k)[1] for k in (0, 8, 9, 17, 18)] == [0, 0, 1, 1, 2]


def test_window_sequences_are_whole_windows_of_one_sample():
    samples = table([5, 23, 10], window=4)
    order = DatasetOrder(samples, cut_pieces(samples, 8, concat=False), seq_len=4, concat=False,
                         seed=1, dataset=0)
    n = order.epoch_units  # 2 + 6 + 3 windows
    first = [order.sequence(k)[0] for k in range(n)]
    assert all(len(segments) == 1 for segments in first)
    got = sorted((s.sample, s.start, s.stop) for [s] in first)
    want = sorted((k, a, min(a + 4, ids)) for k, ids in enumerate(samples.ids) for a in range(0, ids, 4))
    assert got == want
    assert order.sequence(n)[1] == 1 and order.sequence(n - 1)[1] == 0


def test_the_order_depends_on_seed_and_dataset_only():
    samples = table([3] * 50, window=4)
    def first(seed, dataset):
        order = DatasetOrder(samples, cut_pieces(samples, 4, concat=False), seq_len=4, concat=False,
                             seed=seed, dataset=dataset)
        return [order.sequence(k)[0][0].sample for k in range(50)]
    assert first(1, 0) == first(1, 0)
    assert first(1, 0) != first(2, 0) and first(1, 0) != first(1, 1)
    assert sorted(first(1, 0)) == list(range(50))


def test_the_mixer_walks_the_same_way_in_any_steps_and_from_any_saved_point():
    weights = [0.6, 0.3, 0.1]
    whole = Mixer(weights, seed=9)
    datasets, numbers = whole.advance(10_000)  # crosses chunks
    for d in range(3):
        assert numbers[datasets == d].tolist() == list(range(int((datasets == d).sum())))
    assert abs((datasets == 0).mean() - 0.6) < 0.03
    stepped = Mixer(weights, seed=9)
    parts = [stepped.advance(stop) for stop in (1, 5000, 5001, 9000, 10_000)]
    assert np.concatenate([p[0] for p in parts]).tolist() == datasets.tolist()
    assert np.concatenate([p[1] for p in parts]).tolist() == numbers.tolist()
    resumed = Mixer(weights, seed=9, position=7000, counts=[int((datasets[:7000] == d).sum()) for d in range(3)])
    rest = resumed.advance(10_000)
    assert rest[0].tolist() == datasets[7000:].tolist() and rest[1].tolist() == numbers[7000:].tolist()
    assert Mixer(weights, seed=10).advance(100)[0].tolist() != datasets[:100].tolist()


def test_outputs_are_the_sequences_permuted_in_fixed_blocks():
    samples = table([3] * 40, window=4)
    order = DatasetOrder(samples, cut_pieces(samples, 4, concat=False), seq_len=4, concat=False,
                         seed=2, dataset=0, shuffle_sequences=16)
    outputs = [order.shuffled(k) for k in range(48)]
    for block in range(3):
        assert sorted(outputs[16 * block:16 * (block + 1)]) == list(range(16 * block, 16 * (block + 1)))
    assert outputs != list(range(48)) and outputs[:16] != [k - 16 for k in outputs[16:32]]
    assert order.output(5) == order.sequence(outputs[5])
