# What 'make install' (cmake --install build --prefix PREFIX) and the Debian
# package install; docs/install.md lists it. The prefix is the one given at
# install time, so one build installs anywhere: the files that name a path
# (the systemd unit, the starter config) and the directories that depend on
# the prefix are made by dist/install-generated.cmake when installing.

include(GNUInstallDirs)

set(YARD_CONFIG_DIR "/etc/yard" CACHE PATH
    "the directory of the service's yard.yaml, named in yard.service")
set(YARD_SYSTEMD_UNIT_DIR "" CACHE PATH
    "where yard.service goes; empty: PREFIX/lib/systemd/system")
set(YARD_ZSH_COMPLETION_DIR "" CACHE PATH
    "where _yard goes; empty: PREFIX/share/zsh/vendor-completions for /usr, else PREFIX/share/zsh/site-functions")

install(TARGETS yard RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS session-gate RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/yard)
if(TARGET mock-engine)
  install(TARGETS mock-engine RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/yard)
endif()
install(FILES dist/man/yard.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES dist/man/yard.yaml.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES dist/completion/yard.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME yard)

install(CODE "
  set(YARD_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
  set(YARD_BINARY_DIR \"${CMAKE_BINARY_DIR}\")
  set(YARD_BINDIR_REL \"${CMAKE_INSTALL_BINDIR}\")
  set(YARD_LIBEXECDIR_REL \"${CMAKE_INSTALL_LIBEXECDIR}\")
  set(YARD_DATADIR_REL \"${CMAKE_INSTALL_DATADIR}\")
  set(YARD_CONFIG_DIR \"${YARD_CONFIG_DIR}\")
  set(YARD_SYSTEMD_UNIT_DIR \"${YARD_SYSTEMD_UNIT_DIR}\")
  set(YARD_ZSH_COMPLETION_DIR \"${YARD_ZSH_COMPLETION_DIR}\")
")
install(SCRIPT dist/install-generated.cmake)
