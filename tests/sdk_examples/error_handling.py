# From the cerver 0.1.0 README, "Error Handling", unmodified.
from cerver import Sandbox, CerverError, TimeoutError

try:
    with Sandbox() as sandbox:
        result = sandbox.run("print(undefined_var)")
        if result.exit_code != 0:
            print(f"Error: {result.error}")
except TimeoutError:
    print("Code timed out")
except CerverError as e:
    print(f"Error: {e}")
