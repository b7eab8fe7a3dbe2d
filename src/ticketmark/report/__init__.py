"""Pictures and pages: plots of runs and masks, and the HTML/Markdown report."""
