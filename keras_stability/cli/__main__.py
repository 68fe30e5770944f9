import sys

from keras_stability.cli import main

sys.exit(main())
