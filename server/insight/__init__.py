"""Which quant to run: perplexity and KL divergence measured, compared, plotted, recommended.

Tables, rules and plots live here; the scoring loop that reads logits is `engine.scoring`, and
matplotlib is imported only when a plot is drawn.
"""
