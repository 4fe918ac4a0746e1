"""Raw inputs to datasets of shards, one converter per modality on one resumable driver
(driver.py has the diagram). Imports format/, never load/."""
