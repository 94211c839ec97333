"""Watch training: the live monitor, the diagnostics behind its alerts, and the plots.

live          LiveMonitor: one TrainerCallback for every stage, a widget in a notebook,
              monitor.html everywhere
diagnostics   the alert rules (cause and remedy for each) and their Thresholds
plots         panels, traces and pages for the monitor; plot_runs overlays finished runs
"""
