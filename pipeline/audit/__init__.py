"""Commands that check and compare what the pipeline made: `aepipe lineage`, `verify`,
`compare`."""
