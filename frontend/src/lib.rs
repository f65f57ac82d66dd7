//! Dockerfile to BuildGraph: lexer, parser, expansion, stages, planning.
