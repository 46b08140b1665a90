from sdserve.cli import main

main()
