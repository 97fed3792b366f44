"""The course's steps as functions: settings in, results and written files out.

One module per step (`data`, `knn`, `cnn`, `cluster`, `gan`). The command line, `digitlab run`,
the web app and the notebook call these, never each other. Tasks may draw (`plots`) and write
files; the layers below them (models, loops, metrics) do neither.
"""
