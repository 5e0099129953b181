import panel as pn

name = pn.widgets.TextInput(name="Your name", value="world")
pn.Column("# Panel behind servicelab", name, pn.bind(lambda n: f"Hello, {n}!", name)).servable()
