"""Files written whole and shared: atomic replacement, locks, digests, and the folder cache
(engines, data, measured peaks) that several processes and nodes publish into."""
