"""Explanations (Neuronpedia, own labels) and SFAL: co-occurrence vs explanation similarity."""
