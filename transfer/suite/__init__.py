"""The transfer suite: a suite file -> a plan of steps -> resumable runs -> results -> tables."""
