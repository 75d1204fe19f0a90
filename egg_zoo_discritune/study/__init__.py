"""The human retrieval study of the paper's Table 6: build (study file), serve (web app), simulate, analyse."""
