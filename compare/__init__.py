"""Comparing architectures on real data: the pinned corpora the comparisons train on."""
