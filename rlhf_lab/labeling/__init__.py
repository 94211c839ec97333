"""Label: people (or a simulated annotator) rank generations into a durable store.

store/       PreferenceStore: SQLite, append-only events, exports to TRL's formats
agreement    majority votes, Cohen's / Fleiss' kappa, Krippendorff's alpha, win rates
pairs        PairGenerator: candidate responses prefetched in the background
active       active learning's scores: reward-model uncertainty, ensemble disagreement
session      LabelingSession: the labelling logic (queue, undo, ranking, keys, scores), headless
item_queue   ItemQueue: a session's items in order (undo backlog, source, rejected items)
keys         what each key and front-end message means
panel        LabelingPanel: the keyboard-driven notebook widget, a thin mirror of a session
annotator    SimulatedAnnotator: labels by a gold reward with Bradley-Terry noise
human        HumanReward: the panel as PPO's reward, a rollout batch rated item by item
"""
