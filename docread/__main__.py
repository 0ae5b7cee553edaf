from docread.cli import main

main()
