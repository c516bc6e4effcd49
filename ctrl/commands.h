// Subcommands of the linesight binary.
#pragma once

namespace ls {
int cmd_run(int argc, char** argv);
int cmd_model(int argc, char** argv);
int cmd_report(int argc, char** argv);
int cmd_ti(int argc, char** argv);
int cmd_sketches(int argc, char** argv);
}
using ls::cmd_model;
using ls::cmd_run;
using ls::cmd_sketches;
using ls::cmd_ti;
