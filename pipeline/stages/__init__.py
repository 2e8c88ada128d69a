"""One module per DVC stage, run by DVC as `python -m pipeline.stages.<name>`.

Each is a thin shell: `run(params)` reads the stage's inputs, calls the pure core that a domain
package holds, writes the outputs and logs the run. Only `cli` imports these modules.
"""
