"""Judge: evaluate policies on held-out prompts with honest uncertainty.

evaluate           lab.evaluate and lab.compare: reward, gold, KL, perplexity, win rates
stats              bootstrap intervals, paired differences, distinct-n
overoptimization   proxy and gold reward against sqrt(KL) (Gao et al. 2022)
"""
