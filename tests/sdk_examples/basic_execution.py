# From the cerver 0.1.0 README, "Basic Execution", unmodified.
from cerver import Sandbox

with Sandbox() as sandbox:
    # Run code
    result = sandbox.run("x = 1 + 1; print(x)")
    print(result.output)  # 2
    print(result.exit_code)  # 0
    print(result.duration)  # execution time in ms
