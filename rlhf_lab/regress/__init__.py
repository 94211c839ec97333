"""Regress: the numbered notebooks, run headless by papermill, checked against baselines.

baselines   lab.record, profiles, baselines.json and how a value is checked
runner      rlhf-lab regress: run the notebooks, print the table, write runs/regress/
"""
