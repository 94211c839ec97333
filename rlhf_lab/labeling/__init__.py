"""Label: people (or a simulated annotator) rank generations into a durable store.

store/       PreferenceStore: SQLite, append-only events, exports to TRL's formats
agreement    majority votes, Cohen's / Fleiss' kappa, Krippendorff's alpha, win rates
pairs        PairGenerator: candidate responses prefetched in the background
panel        LabelingPanel: the keyboard-driven notebook widget
"""
