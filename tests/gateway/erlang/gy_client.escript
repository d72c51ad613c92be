#!/usr/bin/env escript
%% An independent Gy client on Erlang/OTP's diameter application, for chargeflow's Diameter
%% door tests (tests/gateway/test_diameter_erlang.py).
%%
%%   gy_client.escript DICT_DIR HOST PORT ORIGIN_HOST
%%
%% DICT_DIR holds gy_rfc4006.beam (gy_rfc4006.dia compiled with diameterc and erlc). The
%% script connects (CER/CEA), runs a fixed Gy scenario and prints one line per answer:
%%
%%   <label> <command Result-Code> <rating group>:<Result-Code>:<granted>:<validity>:<fui> ...
%%
%% (granted and validity are "-" when absent, fui is 1 with a Final-Unit-Indication
%% TERMINATE), then "watchdog okay" after DWR/DWA exchanges, and "disconnected" after
%% DPR/DPA. Errors print "error <label> <reason>" and exit 1.
-module(gy_client).
-mode(compile).

-include_lib("diameter/include/diameter.hrl").

-export([main/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-define(SVC, gy_client).
%% Tuesday 2026-11-24 10:00 Europe/Berlin (the sample catalog's peak band), in UTC
-define(PEAK, {{2026, 11, 24}, {9, 0, 0}}).

main([Dir, Host, PortText, OriginHost]) ->
    true = code:add_patha(Dir),
    ok = diameter:start(),
    ok = diameter:start_service(?SVC, [{'Origin-Host', OriginHost},
                                       {'Origin-Realm', "erl.test"},
                                       {'Vendor-Id', 0},
                                       {'Product-Name', "erlang-gy-test"},
                                       {'Auth-Application-Id', [4]},
                                       {decode_format, map},
                                       {application, [{alias, gy},
                                                      {dictionary, gy_rfc4006},
                                                      {module, ?MODULE},
                                                      {answer_errors, callback}]}]),
    true = diameter:subscribe(?SVC),
    {ok, Addr} = inet:parse_address(Host),
    {ok, Ref} = diameter:add_transport(?SVC, {connect,
        [{transport_module, diameter_tcp},
         {transport_config, [{raddr, Addr}, {rport, list_to_integer(PortText)}]},
         {watchdog_timer, 6000},  % the least Erlang takes; DWRs come every 4 to 8 s
         {connect_timer, 5000}]}),
    wait_up(),
    scenario(OriginHost),
    timer:sleep(8500),  % at least one watchdog period: DWR/DWA must keep the peer okay
    [_ | _] = diameter:service_info(?SVC, connections),
    line("watchdog okay", []),
    %% one more request after the watchdog exchanges, then DPR/DPA
    answer("E-after-watchdog", event("dave-e", {0, "491700000004"}, 300, 1)),
    ok = diameter:remove_transport(?SVC, Ref),
    wait_down(),
    line("disconnected", []),
    halt(0);
main(_) ->
    io:format("usage: gy_client.escript DICT_DIR HOST PORT ORIGIN_HOST~n"),
    halt(2).

scenario(Host) ->
    Alice = {0, "491700000001"},
    S = Host ++ ";1;alice",
    answer("I", ccr(S, 1, 0, Alice, [mscc(100, rsu([]), []), mscc(200, rsu([]), [])])),
    U1 = ccr(S, 2, 1, Alice, [mscc(100, rsu([]), [{'CC-Time', 61}]),
                              mscc(200, rsu([]), [{'CC-Total-Octets', 5000}])]),
    answer("U1", U1),
    answer("U1-again", retransmitted(U1)),
    T = ccr(S, 3, 2, none, [mscc(100, none, [{'CC-Time', 30}])]),
    answer("T", T),
    answer("T-again", retransmitted(T)),
    %% an EVENT by IMSI: 2 SMS, direct debiting
    answer("E", event("alice-e", {1, "262010000000001"}, 300, 2)),
    answer("E-again", retransmitted(event("alice-e", {1, "262010000000001"}, 300, 2))),
    answer("unknown", ccr(Host ++ ";2;nobody", 1, 0, {0, "491799999999"},
                          [mscc(100, rsu([]), [])])),
    %% carol (0.50) runs dry: a last grant with FUI, then 4012
    C = Host ++ ";3;carol",
    Carol = {0, "491700000003"},
    answer("C-I", ccr(C, 1, 0, Carol, [mscc(100, rsu([]), [])])),
    answer("C-U", ccr(C, 2, 1, none, [mscc(100, rsu([]), [{'CC-Time', 120}])])),
    answer("C-T", ccr(C, 3, 2, none, [mscc(100, none, [{'CC-Time', 0}])])).

%% -- messages

ccr(Sid, Type, Number, Subscriber, Services) ->
    Base = #{'Session-Id' => Sid,
             'Origin-Host' => origin_host(),
             'Origin-Realm' => "erl.test",
             'Destination-Realm' => "chargeflow.test",
             'Auth-Application-Id' => 4,
             'Service-Context-Id' => "32251@3gpp.org",
             'CC-Request-Type' => Type,
             'CC-Request-Number' => Number,
             'Event-Timestamp' => ?PEAK,
             'Multiple-Services-Credit-Control' => Services},
    M = case Subscriber of
            none -> Base;
            {IdType, Data} ->
                Base#{'Subscription-Id' => [#{'Subscription-Id-Type' => IdType,
                                              'Subscription-Id-Data' => Data}]}
        end,
    ['CCR' | M].

event(Tag, Subscriber, RatingGroup, Units) ->
    ['CCR' | M] = ccr(origin_host() ++ ";9;" ++ Tag, 4, 0, Subscriber,
                      [mscc(RatingGroup, rsu([{'CC-Service-Specific-Units', Units}]), [])]),
    ['CCR' | M#{'Requested-Action' => 0}].

rsu(Units) -> maps:from_list(Units).

mscc(RatingGroup, Requested, Used) ->
    M = #{'Rating-Group' => RatingGroup},
    M1 = case Requested of none -> M; _ -> M#{'Requested-Service-Unit' => Requested} end,
    case Used of
        [] -> M1;
        _ -> M1#{'Used-Service-Unit' => [maps:from_list(Used)]}
    end.

retransmitted(Msg) ->
    #diameter_packet{header = #diameter_header{is_retransmitted = true}, msg = Msg}.

origin_host() ->
    [{'Origin-Host', H}] = diameter:service_info(?SVC, ['Origin-Host']),
    H.

%% -- sending and printing

answer(Label, Request) ->
    case diameter:call(?SVC, gy, Request, [{timeout, 10000}]) of
        ['CCA' | A] ->
            Services = [service(M) || M <- maps:get('Multiple-Services-Credit-Control', A, [])],
            line("~s ~p~s", [Label, maps:get('Result-Code', A), lists:append(Services)]);
        Other ->
            line("error ~s ~p", [Label, Other]),
            halt(1)
    end.

%% optional AVPs ([ ]) decode as lists of at most one value
one([X]) -> X;
one([]) -> undefined;
one(X) -> X.

service(M) ->
    Granted = case one(maps:get('Granted-Service-Unit', M, [])) of
                  undefined -> "-";
                  G -> integer_to_list(lists:sum([one(V) || {_, V} <- maps:to_list(G),
                                                             is_integer(one(V))]))
              end,
    Validity = case one(maps:get('Validity-Time', M, [])) of
                   undefined -> "-";
                   V -> integer_to_list(V)
               end,
    Fui = case one(maps:get('Final-Unit-Indication', M, [])) of
              #{'Final-Unit-Action' := 0} -> "1";
              _ -> "0"
          end,
    io_lib:format(" ~p:~p:~s:~s:~s", [one(maps:get('Rating-Group', M, [0])),
                                     one(maps:get('Result-Code', M, [0])), Granted, Validity,
                                     Fui]).

line(Format, Args) ->
    io:format(Format ++ "~n", Args).

wait_up() ->
    receive
        #diameter_event{info = {up, _, _, _, _}} -> ok;
        #diameter_event{info = {up, _, _, _}} -> ok;
        #diameter_event{info = {closed, _, Reason, _}} ->
            line("error connect ~p", [Reason]), halt(1);
        #diameter_event{} -> wait_up()
    after 10000 ->
        line("error connect timeout", []), halt(1)
    end.

wait_down() ->
    receive
        #diameter_event{info = {down, _, _, _}} -> ok;
        #diameter_event{} -> wait_down()
    after 10000 ->
        line("error disconnect timeout", []), halt(1)
    end.

%% -- diameter_app callbacks

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer}.
prepare_request(Packet, _Svc, _Peer) -> {send, Packet}.
prepare_retransmit(Packet, _Svc, _Peer) -> {send, Packet}.
handle_answer(#diameter_packet{msg = Msg, errors = []}, _Request, _Svc, _Peer) -> Msg;
handle_answer(#diameter_packet{msg = Msg, errors = Errors}, _Request, _Svc, _Peer) ->
    line("decode-errors ~p", [Errors]),
    Msg.
handle_error(Reason, _Request, _Svc, _Peer) -> {error, Reason}.
handle_request(_Packet, _Svc, _Peer) -> discard.
