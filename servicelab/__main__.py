from servicelab.cli import main

main()
