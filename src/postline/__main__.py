from postline.cli import run

run()
