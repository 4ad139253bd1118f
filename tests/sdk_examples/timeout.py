# The README's timeout handling (`except TimeoutError`), with code that runs too long.
from cerver import Sandbox, CerverError, TimeoutError

try:
    with Sandbox(timeout=2) as sandbox:
        sandbox.run("x = 5")
        sandbox.run("import time; time.sleep(30)")
        print("not reached")
except TimeoutError:
    print("Code timed out")
except CerverError as e:
    print(f"Error: {e}")
