"""Stage 1 (01_split): each FFN's neurons grouped into equal experts by balanced K-Means."""
